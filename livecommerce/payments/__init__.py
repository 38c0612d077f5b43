"""Payments: the provider boundary (authorize, capture, cancel, refund, payout), signed
webhooks for results that come later, and the built-in test provider."""
