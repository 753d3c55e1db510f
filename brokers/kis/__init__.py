"""Korea Investment & Securities (KIS) Open API adapter. Grows in the brokers issue."""
