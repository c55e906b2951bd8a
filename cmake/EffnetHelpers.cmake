# Small helpers shared by all folders.

# effnet_torch_target(<target>): give a target LibTorch (libraries and, as system headers, its
# include directories). Only targets that need Torch call it, so the rest compiles without its
# headers (2-core CI).
function(effnet_torch_target target)
  target_link_libraries(${target} PUBLIC ${TORCH_LIBRARIES})
  target_include_directories(${target} SYSTEM PUBLIC ${TORCH_INCLUDE_DIRS})
endfunction()

# effnet_add_gtest(<name> SOURCES ... LIBS ... [LABELS ...] [TIMEOUT s])
function(effnet_add_gtest name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_LIBS} GTest::gtest GTest::gtest_main)
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  add_test(NAME ${name} COMMAND ${name})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  set_tests_properties(${name} PROPERTIES TIMEOUT ${ARG_TIMEOUT} LABELS "${ARG_LABELS}"
    ENVIRONMENT "EFFNET_BIN_DIR=${CMAKE_BINARY_DIR}/bin;EFFNET_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
endfunction()
