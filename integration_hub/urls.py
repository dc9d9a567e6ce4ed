from django.contrib import admin
from django.urls import include, path

admin.site.site_header = "Integration hub: finance exception console"
admin.site.site_title = "Integration hub"
admin.site.index_title = "Postings, exceptions and configuration"

urlpatterns = [
    path("webhooks/", include("apps.ingest.urls")),
    path("admin/", admin.site.urls),
]
