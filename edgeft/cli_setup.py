"""`edgeft llamacpp-setup`: the gguf backend's extra and llama.cpp's own programs, built for this CPU.

Registered by `edgeft` (cli.py).
"""
from __future__ import annotations

import click


@click.command("llamacpp-setup")
@click.option("--print-cmake-args", is_flag=True, help="only print the CMAKE_ARGS this CPU gets, build nothing")
@click.option("--tools", multiple=True, metavar="TARGET",
              help="also build llama.cpp's own programs from the same sources and flags, e.g. --tools llama-server "
                   "--tools llama-bench (the peers the benches compare against); prints their folder")
def llamacpp_setup(print_cmake_args, tools):
    """Install the gguf backend's extra: llama-cpp-python built for this CPU, and llama.cpp's converter.

    Builds llama-cpp-python from its sdist with CMAKE_ARGS taken from /proc/cpuinfo (the CPU's
    AVX/AVX-512/VNNI sets; AMX off, since AMX tiles crash in many VMs), about 4 minutes on 2 cores;
    keeps the wheel under ~/.cache/edgeft for the next time, and unpacks convert_hf_to_gguf.py from
    the same sources. $EDGEFT_LLAMA_CPP points the gguf backend at another llama.cpp tree instead.
    """
    from edgeft.generation.llamacpp_build import build_tools, cmake_args, cpu_flags, setup

    if print_cmake_args:
        click.echo(" ".join(cmake_args(cpu_flags())))
        return
    done = setup(lambda line: click.echo(line, err=True))
    click.echo(f"llama-cpp-python: {done['wheel']}\nconverter: {done['converter']}")
    if tools:
        click.echo(f"tools: {build_tools(list(tools), lambda line: click.echo(line, err=True))}")
