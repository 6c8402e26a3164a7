"""What preferences announce to the layers above them (docs/architecture.md).

`policy_changed` is sent once a change to the refresh policies (every client) or to one
client's preferences committed, with `payload` (the control message's: its `scope`) and
`clients` (None: every client; else their client keys). realtime/policy.py receives it and
tells the open connections, which resolve their policy afresh."""

from django.dispatch import Signal

policy_changed = Signal()
