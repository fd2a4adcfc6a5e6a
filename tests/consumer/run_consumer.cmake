# Script for the install_consumer tests: MODE find_package installs BIN into WORK/prefix and builds the
# consumer against it; MODE add_subdirectory builds the consumer with the source tree SRC inside it.
function(run)
  execute_process(COMMAND ${ARGV} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGV}\n${out}\n${err}")
  endif()
endfunction()

file(REMOVE_RECURSE ${WORK})
if(MODE STREQUAL "find_package")
  run(${CMAKE_COMMAND} --install ${BIN} --prefix ${WORK}/prefix)
  run(${CMAKE_COMMAND} -S ${SRC}/tests/consumer -B ${WORK}/build -DCMAKE_PREFIX_PATH=${WORK}/prefix)
else()
  run(${CMAKE_COMMAND} -S ${SRC}/tests/consumer -B ${WORK}/build -DSAMPLEATTN_SOURCE_DIR=${SRC} -DSAMPLEATTN_CUDA=OFF)
endif()
run(${CMAKE_COMMAND} --build ${WORK}/build -j 2)
run(${WORK}/build/consumer)
