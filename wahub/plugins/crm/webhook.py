"""The webhook crm: backend (being written)."""
