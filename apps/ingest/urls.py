from django.urls import path

from apps.ingest.views import receive_webhook

urlpatterns = [path("<slug:source_name>/", receive_webhook, name="webhook")]
