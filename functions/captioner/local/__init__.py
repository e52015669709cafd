"""The embedded local stack: moto on 127.0.0.1 with the resources of template.yaml."""
