"""The hubspot crm: backend (being written)."""
