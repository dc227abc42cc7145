"""wahub benchmarks (not tests): each reports ratios against a raw aiohttp baseline."""
