# effnet-probe against a port where nothing listens: exit 1 and the address in the message; with
# --wait it retries for about that long before giving up.
execute_process(COMMAND ${PROBE} --address=127.0.0.1:1 --timeout=1 --wait=2
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 1)
  message(FATAL_ERROR "effnet-probe exit ${rc}, expected 1: ${out}${err}")
endif()
if(NOT "${out}${err}" MATCHES "127.0.0.1:1/effnet.v1.Coordinator/GetJobState.*attempt [2-9]")
  message(FATAL_ERROR "effnet-probe did not name the address or did not retry: ${out}${err}")
endif()
execute_process(COMMAND ${PROBE} --token-file=/nonexistent/token
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 1 OR NOT "${out}${err}" MATCHES "/nonexistent/token")
  message(FATAL_ERROR "missing token file: exit ${rc}, ${out}${err}")
endif()
