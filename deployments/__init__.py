"""Operations: deploy the flows (apply.py) and the end-to-end demo (demo_loop.py)."""
