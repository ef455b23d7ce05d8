"""The operator's dashboard: a WSGI app reading Redis through the stores, behind basic auth."""

from __future__ import annotations

from .app import DashboardApp
from .mount import create_app, mounted, serve

__all__ = ["DashboardApp", "create_app", "mounted", "serve"]
