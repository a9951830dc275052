"""``python -m fractal_core.data.demo``: rebuild the demo's precomputed embeddings with the default encoder."""

from fractal_core.data.demo import build_demo_pack

if __name__ == "__main__":
    print(f"wrote {build_demo_pack()}")
