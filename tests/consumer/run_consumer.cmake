# ctest driver (cmake -P) for the consumer-project tests. Inputs: MODE (add_subdirectory | find_package),
# SOURCE_DIR (ssmtune's source), BUILD_DIR (ssmtune's build, find_package mode), WORK_DIR, GENERATOR.
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})
set(project_dir ${SOURCE_DIR}/tests/consumer/project)
# Unoptimised (-O0, no debug info): the tests check that an embedder's build works, not how fast it runs, and in
# add_subdirectory mode the whole library is compiled again (77 s instead of 110 s in Release, on 2 cores).
set(build_flags -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG=-O0)

function(run_step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "step failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
  message(STATUS "${out}")
endfunction()

if(MODE STREQUAL "add_subdirectory")
  run_step(${CMAKE_COMMAND} -S ${project_dir} -B ${WORK_DIR}/build -G ${GENERATOR} ${build_flags}
           -DCONSUMER_MODE=add_subdirectory -DSSMTUNE_SOURCE_DIR=${SOURCE_DIR} -DSSMTUNE_CUDA=OFF)
else()
  run_step(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${WORK_DIR}/prefix)
  run_step(${CMAKE_COMMAND} -S ${project_dir} -B ${WORK_DIR}/build -G ${GENERATOR} ${build_flags}
           -DCONSUMER_MODE=find_package -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix)
endif()
run_step(${CMAKE_COMMAND} --build ${WORK_DIR}/build --parallel 2)
run_step(${WORK_DIR}/build/consumer)
