"""One client per provider (as GOV.UK Notify's app/clients): WhatsApp Cloud API, Unifonic and
Taqnyat SMS, SMTP e-mail. Each maps its provider's answers to DeliveryTransientError (try again
later, through the due set) or DeliveryPermanentError with a `reason` (the policy moves on to the
next channel, and failures are counted by reason), and returns the provider's message id, which
status callbacks later name."""
