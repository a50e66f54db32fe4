"""Who is calling: caller identity (Entra ID tokens, App Service Authentication) for every entry point."""
