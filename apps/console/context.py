from django.conf import settings
from django.http import HttpRequest


def operations_links(request: HttpRequest) -> dict[str, str]:
    """Links the admin index offers engineers: Flower, where it runs (``HUB_FLOWER_URL``)."""
    return {"hub_flower_url": settings.HUB_FLOWER_URL}
