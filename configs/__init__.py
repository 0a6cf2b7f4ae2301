"""The bundled YAML configs; `--config NAME.yaml` finds them from any directory."""
