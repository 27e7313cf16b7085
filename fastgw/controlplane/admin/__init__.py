"""The Admin API and the status listener, served by the supervisor (see DESIGN.md)."""
