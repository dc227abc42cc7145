"""The operator inbox: the web page at ``/inbox`` where people answer the
conversations the bot handed over.

- ``config``: the ``inbox:`` section.
- ``auth``: sign-in, sessions, CSRF and origin checks, sign-in throttling,
  the page's security headers; every inbox handler is wrapped by it.
  ``passwords`` hashes with argon2id; ``proxies`` reads the client's address
  and scheme through trusted reverse proxies.
- ``pages``: the HTML of the sign-in page and the inbox page.
- ``api``: the page's JSON endpoints under ``/inbox/api`` (cookie-authenticated);
  ``shapes`` builds what they and the live feed send.
- ``live``: the activity feed followed by one poller per process and pushed
  to each open page over its WebSocket, with resume after a drop; ``sockets``
  opens a page's socket (``/inbox/ws``) and hands it to the feed.
- ``admin``: the admins' operator endpoints.
- ``assign``: round-robin assignment and the alerts about queued
  conversations nobody took.
- ``plugin``: the hook implementations wiring the above into the daemon.
"""
