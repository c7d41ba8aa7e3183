"""The agent runtime: what runs a kind, so that a kind never touches a socket.

`core` (one agent's step logic as a transport-free state machine: the source driver and the
module stepper), `interfaces` (DNI: synthetic-gradient models and the arithmetic of one link's
synthetic gradient), `synthetic_input` (complete unlock), `process` (one agent process: sockets
and the event loop), `local` (every agent in one process) and `torchwire` (tensors to and from
the protocol's arrays).
"""
