"""Modal dialogs and full screens pushed over the dashboard."""
