"""The ledger writer process (scaled out): the one process that appends to the ledger,
reading orders and commands that web processes put on Redis streams."""
