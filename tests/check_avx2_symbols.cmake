# ctest script: the AVX2 build of Eigen's GEMM (ops/matmul_avx2.cpp, compiled with -mavx2 -mfma) must not lend AVX
# code to the rest of the library. Inline and template functions are weak symbols, and the linker keeps one copy of
# each weak name; had this object a weak function that another object also emits, the baseline path could end up
# running this object's copy, AVX instructions and all, on a CPU without AVX (SIGILL). So: every weak function of
# the object whose name is outside the renamed Eigen namespace ssmtune_eigen_avx2 must contain no VEX instruction
# (a compiler helper such as __clang_call_terminate, or std::bad_alloc's constructor in sanitizer builds, is fine
# as long as it has no vector code); weak data (typeinfo, guards) carries no code and is not checked. The entry
# point must be in the object.
# Works with GNU binutils and with LLVM's (llvm-nm, llvm-ar, llvm-objdump: what CMake picks for clang).
# Usage: cmake -DNM=<nm> -DAR=<ar> -DOBJDUMP=<objdump> -DLIB=<libssmtune.a> -DWORK=<scratch dir> -P check_avx2_symbols.cmake
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})
execute_process(COMMAND ${AR} t ${LIB} OUTPUT_VARIABLE members RESULT_VARIABLE rc)
string(REGEX MATCH "[^\n]*matmul_avx2\\.cpp\\.o" member "${members}")
if(NOT rc EQUAL 0 OR NOT member)
  message(FATAL_ERROR "no matmul_avx2.cpp.o in ${LIB} (${AR} t: ${rc})")
endif()
execute_process(COMMAND ${AR} x ${LIB} ${member} WORKING_DIRECTORY ${WORK} RESULT_VARIABLE rc)
set(obj ${WORK}/${member})
# Mangled names (no -C): they hold no characters CMake lists treat specially ([ ] ;).
execute_process(COMMAND ${NM} ${obj} OUTPUT_VARIABLE listing RESULT_VARIABLE rc2)
if(NOT rc EQUAL 0 OR NOT rc2 EQUAL 0)
  message(FATAL_ERROR "cannot extract or list ${member} of ${LIB}")
endif()
string(REPLACE "\n" ";" lines "${listing}")
# The whole object disassembled once; each function is "<name>:" up to the next blank line, in both formats.
execute_process(COMMAND ${OBJDUMP} -d --no-show-raw-insn ${obj} OUTPUT_VARIABLE disassembly RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${OBJDUMP} -d ${obj} failed (${rc})")
endif()
set(found_entry OFF)
set(checked 0)
set(bad "")
foreach(line IN LISTS lines)
  if(NOT line MATCHES "^[0-9a-f]* *([A-Za-z]) (.*)$")
    continue()
  endif()
  set(kind "${CMAKE_MATCH_1}")
  set(name "${CMAKE_MATCH_2}")
  if(kind STREQUAL "T" AND name MATCHES "^_ZN7ssmtune6detail20gemm_accumulate_avx2E")
    set(found_entry ON)
  endif()
  if(kind STREQUAL "W" AND NOT name MATCHES "ssmtune_eigen_avx2")
    math(EXPR checked "${checked} + 1")
    string(FIND "${disassembly}" "<${name}>:\n" at)
    if(at EQUAL -1)
      string(APPEND bad "\n  ${name} (weak, but not found in the disassembly)")
      continue()
    endif()
    string(SUBSTRING "${disassembly}" ${at} -1 code)
    string(FIND "${code}" "\n\n" end)
    string(SUBSTRING "${code}" 0 ${end} code)
    if(code MATCHES "\tv[a-z0-9]+[ \t]|%[yz]mm")  # a VEX mnemonic (vaddss, vmovups, ...) or a ymm/zmm register
      string(APPEND bad "\n  ${name}")
    endif()
  endif()
endforeach()
if(NOT found_entry)
  message(FATAL_ERROR "${member} does not define ssmtune::detail::gemm_accumulate_avx2")
endif()
if(bad)
  message(FATAL_ERROR "${member} has weak functions outside ssmtune_eigen_avx2 with AVX code, which the linker may "
                      "keep for the baseline path too:${bad}\n"
                      "fix: keep that file's includes to Eigen and <cstdint>, or move the code that instantiates them")
endif()
message(STATUS "${member}: all AVX code is in ssmtune_eigen_avx2 or local (${checked} other weak functions, no vector code)")
