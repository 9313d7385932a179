"""Provisioning: create the databases, roles and grants a deployment needs (``civicsync db init``)."""
