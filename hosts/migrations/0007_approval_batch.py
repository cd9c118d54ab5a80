# One approval request for a batch of ssh_execute_many (issue 13): its hosts, batch id and plan.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("hosts", "0006_host_jump_host"),
    ]

    operations = [
        migrations.AddField(
            model_name="approvalrequest",
            name="batch_hosts",
            field=models.JSONField(blank=True, default=list, help_text="The hosts the approval covers."),
        ),
        migrations.AddField(
            model_name="approvalrequest",
            name="batch_id",
            field=models.CharField(blank=True, db_index=True, default="", max_length=40),
        ),
        migrations.AddField(
            model_name="approvalrequest",
            name="batch_plan",
            field=models.JSONField(blank=True, default=dict, editable=False),
        ),
    ]
