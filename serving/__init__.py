"""The Ray Serve application: see app.py (entry point serving.app:build_app) and config.yaml."""
