"""Ray Serve application (open issue: serving on Ray Serve). Nothing here yet."""
