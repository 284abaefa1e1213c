import sys
from pathlib import Path

# Lets tests import the shared helpers in this folder (reference.py) by name.
sys.path.insert(0, str(Path(__file__).parent))
