"""Code every stage of Bastion shares: settings, tenant policies, the model, stores, the CLI."""
