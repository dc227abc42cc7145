"""Conversations: who answers each one (its owner), and the bot's turns.

One owner at a time, stored and audited (``wahub.core.models.Owner``): the
bot (rules, FAQ, AI), the queue (a person was asked for), an operator, or the
business app. The bot answers only while it owns the conversation, checked
again in the transaction that queues its replies.
"""
