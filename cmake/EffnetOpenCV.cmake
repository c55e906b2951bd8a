# OpenCV: Debian's split -dev packages (libopencv-imgcodecs-dev, libopencv-imgproc-dev) carry the
# headers and libraries but not OpenCVConfig.cmake (that lives in the 247-package umbrella
# libopencv-dev). Use the config when present, else find the three libraries directly.
find_package(OpenCV QUIET COMPONENTS core imgproc imgcodecs)
if(NOT OpenCV_FOUND)
  find_path(EFFNET_OPENCV_INCLUDE opencv2/core.hpp PATH_SUFFIXES opencv4 REQUIRED)
  foreach(m core imgproc imgcodecs)
    find_library(EFFNET_OPENCV_${m} opencv_${m} REQUIRED)
  endforeach()
  set(OpenCV_INCLUDE_DIRS ${EFFNET_OPENCV_INCLUDE})
  set(OpenCV_LIBS ${EFFNET_OPENCV_core} ${EFFNET_OPENCV_imgproc} ${EFFNET_OPENCV_imgcodecs})
  set(OpenCV_FOUND TRUE)
endif()
add_library(effnet_opencv INTERFACE)
target_include_directories(effnet_opencv SYSTEM INTERFACE ${OpenCV_INCLUDE_DIRS})
target_link_libraries(effnet_opencv INTERFACE ${OpenCV_LIBS})
message(STATUS "effnet: OpenCV ${OpenCV_INCLUDE_DIRS}")
