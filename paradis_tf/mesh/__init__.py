"""The gRPC mesh: node daemons and the coordinator that drives them."""
