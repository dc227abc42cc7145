"""Built-in crm: backends: event webhooks, HubSpot, Zendesk and Chatwoot."""
