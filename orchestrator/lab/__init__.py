"""The pure core: what a lab is. The topology file (spec.py), the names derived from it
(naming.py), the desired kernel state (resources.py, desired.py), the nftables table (nft_table.py)
and the picture (graph.py). Nothing here imports a kernel library or touches the system."""
