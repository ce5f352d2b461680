import sys

from ollama_standin.cli import main

sys.exit(main())
