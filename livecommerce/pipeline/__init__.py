"""The order pipeline: orders and commands from the sockets and the HTTP API, through the
commerce core, made durable in the ledger, then answered, with receipts once a checkpoint
covers them. Embedded and scaled out differ only in two parts: where stock is taken and
where the ledger is (docs/architecture.md)."""
