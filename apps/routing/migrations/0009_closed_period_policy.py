from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("routing", "0008_connection_tokens"),
    ]

    operations = [
        migrations.AddField(
            model_name="erpconnection",
            name="closed_period_policy",
            field=models.CharField(
                choices=[
                    ("park", "Park for finance"),
                    ("redate", "Re-date into the first open period (billing's date kept in the memo)"),
                ],
                default="park",
                help_text="A document dated in a period the ERP has closed: park it as a case for finance, or post "
                "it dated the first day the ERP accepts, with billing's date in its memo (connectors that can name "
                "that day: Tryton; the others park).",
                max_length=16,
            ),
        ),
    ]
