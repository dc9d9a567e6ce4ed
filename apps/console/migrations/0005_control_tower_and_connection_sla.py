from decimal import Decimal

import django.core.validators
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('console', '0004_routing_cases'),
        ('routing', '0007_routing_rule_conditions_and_versions'),
    ]

    operations = [
        migrations.CreateModel(
            name='ControlTower',
            fields=[],
            options={
                'verbose_name': 'control tower',
                'verbose_name_plural': 'control tower',
                'proxy': True,
                'indexes': [],
                'constraints': [],
            },
            bases=('routing.erpconnection',),
        ),
        migrations.CreateModel(
            name='ConnectionSLA',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('min_success_rate_percent', models.DecimalField(decimal_places=2, default=Decimal('95.00'), help_text='Posted ÷ (posted + parked + dead) over the window, at least this.', max_digits=5, validators=[django.core.validators.MinValueValidator(Decimal('0')), django.core.validators.MaxValueValidator(Decimal('100'))])),
                ('max_p95_latency_seconds', models.PositiveIntegerField(default=300, help_text='95% of documents posted within this many seconds of their billing event.')),
                ('max_backlog', models.PositiveIntegerField(default=1000, help_text='Postings not yet posted, parked, dead or skipped, at most this.')),
                ('max_open_case_age_hours', models.PositiveIntegerField(default=24, help_text='No exception case open longer than this.')),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('connection', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='sla', to='routing.erpconnection')),
            ],
            options={
                'verbose_name': 'connection SLA',
                'verbose_name_plural': 'connection SLAs',
            },
        ),
    ]
