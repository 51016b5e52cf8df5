// The demo app: Kotlin UI + TFLite's Android Interpreter + the tfpconv delegate through a JNI bridge
// (src/main/cpp) built by the NDK from the repository's delegate/ sources.
plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

val tfpconvAbis: List<String> =
    (findProperty("tfpconv.abis") as String? ?: "arm64-v8a")
        .split(",").map { it.trim() }.filter { it.isNotEmpty() }
val flatbuffersInclude = findProperty("tfpconv.flatbuffersInclude") as String?

android {
    namespace = "com.tfpconv.demo"
    compileSdk = 34
    // NDK r26d; any r25+ works (C++17, NEON intrinsics, lld).
    ndkVersion = "26.3.11579264"

    defaultConfig {
        applicationId = "com.tfpconv.demo"
        minSdk = 24
        targetSdk = 34
        versionCode = 1
        versionName = "0.1.0"

        ndk {
            abiFilters += tfpconvAbis
        }
        externalNativeBuild {
            cmake {
                // One library: the bridge with the delegate linked in statically.
                targets += "tfpconv_jni"
                cppFlags += listOf("-fexceptions", "-frtti")
                arguments += "-DANDROID_STL=c++_static"
                if (flatbuffersInclude != null) {
                    arguments += "-DTFPCONV_FLATBUFFERS_INCLUDE_DIR=$flatbuffersInclude"
                }
            }
        }
    }

    externalNativeBuild {
        cmake {
            path = file("src/main/cpp/CMakeLists.txt")
            version = "3.22.1"
        }
    }

    buildTypes {
        release {
            isMinifyEnabled = false
            proguardFiles(getDefaultProguardFile("proguard-android-optimize.txt"), "proguard-rules.pro")
            // A demo: sign release builds with the debug key so `installRelease` works as is.
            signingConfig = signingConfigs.getByName("debug")
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    kotlinOptions {
        jvmTarget = "17"
    }

    androidResources {
        // The model is memory-mapped straight from the APK, which needs it stored uncompressed.
        noCompress += "tflite"
    }
}

dependencies {
    // The bundled TFLite runtime: its JNI applies Delegate.getNativeHandle() as a TfLiteDelegate*.
    implementation("org.tensorflow:tensorflow-lite:2.16.1")
}

// The model is generated (android_demo/make_assets.py); fail early with the command to run.
val checkDemoAssets by tasks.registering {
    val model = file("src/main/assets/model.tflite")
    val manifest = file("src/main/assets/images/manifest.csv")
    doLast {
        if (!model.isFile || !manifest.isFile) {
            throw GradleException(
                "android_demo/app/src/main/assets/ lacks model.tflite or images/manifest.csv: run " +
                    "`python3 android_demo/make_assets.py --model runs/demo/fashion_pconv.tflite` " +
                    "from the repository root first (see android_demo/README.md)"
            )
        }
    }
}
tasks.named("preBuild") { dependsOn(checkDemoAssets) }
