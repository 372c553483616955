"""The usage page (`/ui`): a static shell, its script and style, served by the gateway."""
