"""Reusable bits of the app: modal screens and small display widgets."""
