"""The chatwoot crm: backend (being written)."""
