"""Stand-ins for what the fleet lab cannot download: Ollama and NVIDIA's CUDA repository.

Part of the lab, run only by `gpufleet lab up`, never installed outside it:

  ollama/     Ollama on the wire and on disk (API, CLI, model store), packed as a
              release-shaped archive for lab hosts, and the model registry the lab serves;
              `python -m gpufleet.lab.standins.ollama serve`
  cuda_repo/  a repository of the layout of NVIDIA's CUDA apt repository, signed with the
              lab's own key, holding Debian's driver packages

Each follows the real thing's documented behaviour; their contract tests live in the
project's tests/standin/.
"""
