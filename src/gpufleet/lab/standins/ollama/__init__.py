"""A stand-in for Ollama, for gpufleet's fleet lab and its tests only.

No Ollama release can be downloaded on gpufleet's development and CI machines and
there is no GPU, so this package behaves like Ollama on the wire and on disk,
following Ollama's API documentation (docs/api.md in the ollama repository), its Go
types (api/types.go) and its model store layout. It is never installed on users'
hosts: production installs the real Ollama release. It runs on the lab hosts' own
python3 and uses the standard library only; its imports are relative, so the lab can
pack it into a release archive under any package name.

Stand-in-only settings (Ollama has none of these):
  OLLAMA_STANDIN_REGISTRY           base URL that bare model names are pulled from
                                    instead of https://registry.ollama.ai
  OLLAMA_STANDIN_TOKENS_PER_SECOND  generation speed (default 20), so a stream lasts
                                    seconds like a real LLM's
  OLLAMA_STANDIN_RESPONSE_TOKENS    tokens in a response unless options.num_predict
                                    says otherwise (default 24)
"""

VERSION = "0.14.2"
STANDIN_NOTICE = "gpufleet lab stand-in for Ollama, not Ollama"
