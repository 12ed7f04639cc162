# Only a hand-off: node-gyp (called by node-gyp-build and prebuildify) runs the CMake build, which is
# the one build description (CMakeLists.txt). Nothing is compiled by gyp itself.
{
  "targets": [
    {
      "target_name": "facedet",
      "type": "none",
      "actions": [
        {
          "action_name": "cmake_js_build",
          "inputs": ["CMakeLists.txt"],
          "outputs": ["<(PRODUCT_DIR)/facedet.node"],
          "action": ["node", "scripts/build-native.js", "--output-dir", "<(PRODUCT_DIR)"]
        }
      ]
    }
  ]
}
