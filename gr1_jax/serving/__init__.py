"""Serving a GR1Policy over a websocket, in the wire format of openpi's policy client.

`policy_server.PolicyServer` is the server; `msgpack_numpy` the message encoding.
"""
