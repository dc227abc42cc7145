"""How long-running work stops: the shutdown stages and their grace."""

from __future__ import annotations

#: Seconds each shutdown stage may take, in order. Their sum keeps the daemon's
#: exit within 10 s of SIGTERM; what a stage cuts off runs again at the next
#: start, as after a crash.
SHUTDOWN_GRACE = {
    "requests": 2.5,  # HTTP requests in progress (webhooks waiting for their commit)
    "inbox": 2.5,  # inbox rows being processed
    "intake": 0.5,  # the inbox writer's last commit
    "sends": 1.5,  # sends in flight
    "plugins": 0.5,  # plugin lifespans exiting
    "providers": 0.5,  # providers stopping
    "background": 0.5,  # tasks started with hub.spawn
}
