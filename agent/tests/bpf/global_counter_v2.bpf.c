// SPDX-License-Identifier: GPL-2.0
// global_counter.bpf.c with another .bss layout (a variable in front of `calls`).
#define LAYOUT_V2 1
#include "global_counter.bpf.c"
