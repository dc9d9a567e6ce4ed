import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("posting", "0011_posting_routing_version"),
    ]

    operations = [
        migrations.CreateModel(
            name="RedatedPosting",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("original_date", models.DateField(help_text="The document's date in billing.")),
                (
                    "posted_date",
                    models.DateField(db_index=True, help_text="The date the hub gave the document in the ERP."),
                ),
                (
                    "reason",
                    models.CharField(
                        choices=[
                            ("closed_period", "Period closed in the ERP"),
                            ("invoice_date_out_of_sequence", "A later invoice is already numbered in the ERP"),
                        ],
                        max_length=32,
                    ),
                ),
                (
                    "erp_message",
                    models.TextField(blank=True, help_text="What the ERP said when it refused billing's date."),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "posting",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="redated",
                        to="posting.posting",
                    ),
                ),
            ],
            options={
                "verbose_name": "re-dated posting",
                "ordering": ["-posted_date", "-id"],
            },
        ),
    ]
