"""The zendesk crm: backend (being written)."""
