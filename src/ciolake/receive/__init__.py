"""The request path: signature checks, the development key, the intake, the webhook."""
