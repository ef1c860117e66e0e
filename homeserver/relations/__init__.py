"""Relations: child events of an event (/relations), threads (/threads) and the
server-side aggregations bundled into `unsigned.m.relations`."""
