"""The bottom layer (docs/architecture.md): what every app uses and nothing domain-specific.
It imports no app of the project."""
