from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

admin.site.site_header = "Integration hub: finance exception console"
admin.site.site_title = "Integration hub"
admin.site.index_title = "Postings, exceptions and configuration"

urlpatterns = [
    path("webhooks/", include("apps.ingest.urls")),
    path("admin/", admin.site.urls),
    # The versioned REST API; apps/flow/api.py documents authentication and permissions.
    path("api/v1/", include("apps.flow.api")),
    path("api/v1/", include("apps.ingest.api")),
    path("api/v1/", include("apps.validation.api")),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # /healthz, /readyz, /metrics (apps/observability/views.py)
    path("", include("apps.observability.urls")),
]
